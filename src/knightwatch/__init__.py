"""knightwatch: the trading-safety system Knight Capital needed on 2012-08-01."""

import logging

# A library never configures logging; operators attach handlers to "knightwatch".
logging.getLogger("knightwatch").addHandler(logging.NullHandler())

__version__ = "0.1.0"
