"""The characters no submitted string may hold, for every layer that checks one: the API's
text types (`api.schemas.Text`) and what core checks itself (an e2ee send's content)."""

# C0 controls, DEL and C1 controls, as a regex character class body. Newline and tab are let
# through only where a text may have lines (`api.schemas.MULTILINE`).
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
