"""Reading packs in training loops: pyarrow and numpy over memory-mapped shards, never the Rust
engine, so it is safe in forked DataLoader workers. torch is used when installed."""

from .collate import block_diagonal_causal_mask as block_diagonal_causal_mask
from .collate import collate_padded as collate_padded
from .collate import collate_padding_free as collate_padding_free
from .loader import PackLoader as PackLoader
from .loss import count_trained_tokens as count_trained_tokens
from .loss import global_trained_tokens as global_trained_tokens
from .loss import sum_token_loss as sum_token_loss
from .mixture import PackMixture as PackMixture
from .pack import IGNORE_INDEX as IGNORE_INDEX
from .pack import PackDataset as PackDataset
from .pack import PackFormatError as PackFormatError
from .sampler import PackSampler as PackSampler

__all__ = [
    "IGNORE_INDEX",
    "PackDataset",
    "PackFormatError",
    "PackLoader",
    "PackMixture",
    "PackSampler",
    "block_diagonal_causal_mask",
    "collate_padded",
    "collate_padding_free",
    "count_trained_tokens",
    "global_trained_tokens",
    "sum_token_loss",
]
