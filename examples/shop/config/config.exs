import Config

# The test suite neither serves HTTP nor reports errors to SelfHeal: it
# binds no port and sends nothing anywhere.
config :shop,
  start_server: config_env() != :test,
  report_errors: config_env() != :test

if config_env() == :test do
  config :logger, level: :warning
end
