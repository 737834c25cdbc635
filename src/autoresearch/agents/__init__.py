"""Agents propose the next change; the harness does everything else."""

from autoresearch.agents.base import Agent, AgentError, Context, Proposal

__all__ = ["Agent", "AgentError", "Context", "Proposal"]
