"""The client side of end-to-end encryption, on vodozemac (Olm/Megolm) and Matrix's JSON."""
