"""Prefect tasks: thin steps that call a facility or a store, with retries and artifacts.

Backend code lives in blocks/; decisions live in planner/.
"""
