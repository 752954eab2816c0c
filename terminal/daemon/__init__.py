"""The sign-off daemon: a fleet of terminals kept signed in by day and closed by night."""

from .config import FleetConfig, FleetConfigError, parse_duration
from .daemon import SignOffDaemon
from .supervisor import Killed, Supervisor

__all__ = ["FleetConfig", "FleetConfigError", "Killed", "SignOffDaemon", "Supervisor", "parse_duration"]
