"""The bottom layer: settings, parameter checks, units, job models, states, errors, files.

Every other package may import it; it imports none of them and no backend SDK.
"""
