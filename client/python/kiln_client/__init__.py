"""Python client for kilnd, the Kiln coordinator: submit, list, get, watch, follow logs, cancel,
read metrics and nodes. The kiln.v1 stubs it uses are generated from proto/ at build time."""

from kiln_client.client import Client, KilnError, TERMINAL_STATES, state_name, to_dict

__all__ = ["Client", "KilnError", "TERMINAL_STATES", "state_name", "to_dict"]
