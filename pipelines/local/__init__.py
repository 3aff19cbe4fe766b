"""Local stand-ins for outside services, for tests and the demo (the LRS in ``lrs``)."""
