"""The released Fine-T2I dataset's conventions (folders, keys, the 15-key json, index tables) and the
validator that checks a folder against them."""
