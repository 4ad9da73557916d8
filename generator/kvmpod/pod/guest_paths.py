"""Where the host puts the pod's files in the guest, and the generator reads them (rkt's layout)."""

GUEST_CONFIG_DIR = "/etc/kvmpod"
DEFAULT_MANIFEST = f"{GUEST_CONFIG_DIR}/pod.json"
NETWORKS_PATH = f"{GUEST_CONFIG_DIR}/networks.json"  # see guest/network.py for its format
# Units kvmpod rendered on the host, <sha256>.tar, named by kvmpod.units= (host/prerendered_units.py)
PRERENDERED_UNITS_DIR = "/var/lib/kvmpod/units"
