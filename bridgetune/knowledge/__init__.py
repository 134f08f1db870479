"""Knowledge for Chinese and domain text: vocabulary extension (vocab.py)."""
