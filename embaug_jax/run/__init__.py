"""Orchestration above the stages: the commands that run several stages in one workdir."""
