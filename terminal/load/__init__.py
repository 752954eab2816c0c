"""Load mode: fleets of simulated terminals against a host, with throughput, latency and outcomes."""

from .identities import Identity, generate_identities, read_identities, write_identities
from .runner import LoadConfig, LoadReport, LoadRunner
from .shards import ShardError, run_sharded

__all__ = ["Identity", "LoadConfig", "LoadReport", "LoadRunner", "ShardError", "generate_identities", "read_identities",
           "run_sharded", "write_identities"]
