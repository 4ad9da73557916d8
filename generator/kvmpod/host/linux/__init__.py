"""Linux calls every host room makes through libc (prctl, ...): a leaf that imports no other host room."""
