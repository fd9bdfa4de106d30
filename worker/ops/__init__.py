"""Operating the worker: the request channel, heartbeat and health, metrics,
systemd notify, the status report and the channel key."""
