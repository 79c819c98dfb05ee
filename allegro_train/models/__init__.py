"""Plain PyTorch models: the Allegro DiT (``dit``), the VideoVAE and the text encoder.

Everything under ``allegro_train.models`` imports torch, einops and safetensors only, so the
models run on machines that have none of the training stack (DeepSpeed, Hydra, webdataset).
"""
