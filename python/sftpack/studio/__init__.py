"""``sftpack studio``: a local web app over a working folder — datasets with their trained tokens,
packs row by row, training runs as live charts, chat with a trained model, and preprocess/train
launched from a form that shows the exact command first. Offline: every asset ships in the
package. See docs/studio.md."""

from .app import create_app as create_app
from .app import serve as serve
