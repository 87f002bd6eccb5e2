"""shopgraph ml: the model code that both training and serving need.

SASRec with its save/load, the ranker network and its features, ranking metrics, the
embedded encoder and generator base model, prompts, the grounding check, the vLLM/HF engine
seam and the FAISS index over item or text vectors. It imports only `core`: `train` fits
these models, `serve` loads them, and a serving process needs no training code.
"""
