"""Where the host puts the pod's files in the guest, and the generator reads them (rkt's layout)."""

GUEST_CONFIG_DIR = "/etc/kvmpod"
DEFAULT_MANIFEST = f"{GUEST_CONFIG_DIR}/pod.json"
NETWORKS_PATH = f"{GUEST_CONFIG_DIR}/networks.json"  # see guest/network.py for its format
