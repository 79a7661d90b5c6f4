"""Volunteer relays: a byte forwarder that never sees plaintext, the signed descriptors that tell
clients where relays are, and obfs4 run as a managed pluggable transport."""
