# The application (and with it the :self_heal logger handler and
# SelfHeal.Collector) is started by `mix test`.
ExUnit.start()
