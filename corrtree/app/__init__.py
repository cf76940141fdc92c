"""The application: run folders (``run``, ``config``, ``report``), the command line
(``cli``), the demo and the figures."""
