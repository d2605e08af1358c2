"""The paper's benchmarks as ``scope_<name>`` tasks: lmms-eval's built-in definitions, the paper's
settings where they differ, realised visual tokens as metrics, and no ``token: True``."""
