"""The text encoder Allegro conditions on: frozen T5 v1.1-XXL (``T5TextEncoder``) and caption cleaning.

transformers is imported only inside ``T5TextEncoder.from_pretrained``, so importing this package
(and ``allegro_train.models``) needs torch alone.
"""

from allegro_train.models.text.clean import clean_caption
from allegro_train.models.text.t5 import T5TextEncoder

__all__ = ["T5TextEncoder", "clean_caption"]
