"""Integrations with other packages; none is imported by ``agentsudo_tokens`` itself.

from agentsudo_tokens.integrations.pydantic import ScopedModel
from agentsudo_tokens.integrations.langchain import guard_tool
from agentsudo_tokens.integrations.mcp import AgentSudoTokenVerifier, guarded_tool
"""
