"""sftpack: exact, fast SFT data preparation for LLMs.

The data engine is written in Rust (``sftpack._core``); this package holds the user-facing API
and the command line.
"""

from ._core import __version__ as __version__
from .data import PackDataset as PackDataset
from .data import PackLoader as PackLoader
from .data import PackMixture as PackMixture
from .data import PackSampler as PackSampler
from .encoding import EncodedConversation as EncodedConversation
from .encoding import Encoder as Encoder
from .encoding import encode_conversation as encode_conversation
from .errors import ConfigError as ConfigError
from .errors import InputError as InputError
from .errors import OutputError as OutputError
from .errors import RecordError as RecordError
from .errors import SftpackError as SftpackError
from .errors import TemplateError as TemplateError
from .errors import TokenizerError as TokenizerError
from .jobs import CheckReport as CheckReport
from .jobs import check as check

__all__ = [
    "CheckReport",
    "ConfigError",
    "EncodedConversation",
    "Encoder",
    "InputError",
    "OutputError",
    "PackDataset",
    "PackLoader",
    "PackMixture",
    "PackSampler",
    "RecordError",
    "SftpackError",
    "TemplateError",
    "TokenizerError",
    "__version__",
    "check",
    "encode_conversation",
]
