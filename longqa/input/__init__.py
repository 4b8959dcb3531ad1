"""Input: a SOURCE read as text (reader), split into sentences and token ids (text, tokenize_pool), cut into segments."""
