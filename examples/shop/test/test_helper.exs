# `mix test --no-start` works too: the tests need only :inets (the server
# test serves on a free port and asks with :httpc).
{:ok, _} = Application.ensure_all_started(:inets)
ExUnit.start()
