"""`deutzia`: the command people use to read an item's history, over the deployed API or the local stack."""
