"""SMTP sink of the local-cluster smtp-sink image (scripts/k8s/build-images.sh).

aiosmtpd's Mailbox handler (every message into a Maildir), plus one line on stdout for
each message, so `kubectl logs` shows what was sent. Run as
    python3 -m aiosmtpd -n -l 0.0.0.0:1025 -c smtp_sink.LoggingMailbox /var/mail/maildir
Development only: no authentication, no TLS, accepts mail for anyone.
"""

import signal
import sys
from email.header import decode_header, make_header

from aiosmtpd.handlers import Mailbox

# As PID 1 in a container, Python ignores SIGTERM unless it handles it; aiosmtpd's main
# loop stops cleanly on KeyboardInterrupt, which is what SIGINT's default handler raises.
signal.signal(signal.SIGTERM, signal.default_int_handler)


def _header(message, *names):
    for name in names:
        value = message.get(name)
        if value is not None:
            try:
                return str(make_header(decode_header(value)))
            except Exception:  # a malformed header: log it as it came
                return str(value)
    return ""


class LoggingMailbox(Mailbox):
    def handle_message(self, message):
        super().handle_message(message)
        print(
            "smtp-sink: message from={!r} to={!r} subject={!r} size={}".format(
                _header(message, "X-MailFrom", "From"),
                _header(message, "X-RcptTo", "To"),
                _header(message, "Subject"),
                len(message.as_bytes()),
            ),
            file=sys.stdout,
            flush=True,
        )
