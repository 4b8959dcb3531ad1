"""Training and evaluation data: bAbI stories, real-text noise, BABILong haystacks, the tokenizer."""
