"""Images: the apps' (ACI) and the guest's own (the stage1)."""
