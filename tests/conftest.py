import os

import torch


os.environ.setdefault("WALKREG_NO_PROGRESS", "1")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
