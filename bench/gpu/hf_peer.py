"""What the GPU peers share (peer_dpo_step.py, peer_generate.py): a Hugging Face
folder loaded in bf16 with SDPA attention on the device asked for."""
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM

# transformers >= 4.56 names it dtype; older ones torch_dtype (and would take dtype= as a config field).
DTYPE_KW = "dtype" if tuple(int(x) for x in transformers.__version__.split(".")[:2]) >= (4, 56) else "torch_dtype"


def load(who, path, device, threads):
    """(model on the device, torch.device, whether it is CUDA); exits with one line naming `who`
    when the device is CUDA and torch sees none."""
    if threads > 0:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit(f"{who}: --device cuda: torch sees no CUDA device")
    model = AutoModelForCausalLM.from_pretrained(path, **{DTYPE_KW: torch.bfloat16}, attn_implementation="sdpa").to(dev)
    return model, dev, cuda
