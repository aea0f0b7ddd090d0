"""Fuzzing helpers shared by the test suite (hypothesis) and ``scripts/fuzz.py`` (atheris).

``targets`` runs each reader on untrusted bytes under time and memory bounds; ``seeds`` builds
the small valid inputs that mutations start from.
"""
