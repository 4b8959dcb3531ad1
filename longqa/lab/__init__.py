"""The lab: what builds the model (generate data, train, evaluate). The runtime never imports it."""
