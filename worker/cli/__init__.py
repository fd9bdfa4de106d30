"""The ``tradescribe`` command: the only place that reads flags, installs signal
handlers and configures logging. One module per command group."""
