"""Browser tests: Playwright driving Debian's Chromium against real Keyhold servers.

A package (unlike tests/ itself) so that its conftest.py is `browser.conftest` and does not
take the module name `conftest` from tests/conftest.py, which every test file imports from.
Test modules here import the shared helpers as `from browser.helpers import ...`.
"""
