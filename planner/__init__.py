"""IVOA Execution Planner core: task requests, facility capabilities, offers and matching.

Pure logic and pydantic models; nothing here talks to Prefect, HTTP or a facility.
"""
