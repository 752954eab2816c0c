"""possim terminals under Locust: every user is a terminal, every ISO 8583 exchange a request.

Needs `pip install 'possim[locust]'`. A host that knows the fleet, then Locust (docs/locust.md):

    possim load --emit-identities ids.csv --terminals 200
    possim host --listen tcp://127.0.0.1:5800 --terminals-csv ids.csv --db host.sqlite &
    locust -f examples/locustfile.py --headless -u 50 -r 10 -t 1m \\
        -H tcp://127.0.0.1:5800 --possim-identities ids.csv

Master and workers (each worker drives its own share of ids.csv; the file must exist on each):

    locust -f examples/locustfile.py --master --expect-workers 2 --headless -u 100 -r 20 -t 5m \\
        -H tcp://127.0.0.1:5800 --possim-identities ids.csv
    locust -f examples/locustfile.py --worker --master-host 127.0.0.1      # twice, or on other machines

Request names are "<MTI> <operation>": "0800 sign-in", "0200 sale", "0400 reversal", "0500 settlement",
"0820 sign-off", ... A host decline is a failure naming its code ("rc 51 insufficient funds").
"""

from locust import between, events

from terminal.load.locust_user import PossimUser, add_arguments


@events.init_command_line_parser.add_listener
def _possim_options(parser):
    # --possim-identities, --possim-terminals, --possim-mix, --possim-reply-timeout, --possim-close-timeout
    add_arguments(parser)


class Terminal(PossimUser):
    """A merchant's terminal: a transaction of the mix every 0.1 to 1 s (shorten for more load per user)."""

    wait_time = between(0.1, 1.0)
