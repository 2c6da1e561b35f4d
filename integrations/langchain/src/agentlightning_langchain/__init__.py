"""Agent Lightning for LangChain and LangGraph: their runs recorded as spans of the active rollout.

::

    from agentlightning_langchain import LightningCallbackHandler, instrument

    graph.invoke(state, config={"callbacks": [LightningCallbackHandler()]})  # one call
    instrument()  # or every LangChain run in the process (also: agl.instrument("langchain"))
"""

from agentlightning_langchain._instrument import instrument, instrumented_handler, uninstrument
from agentlightning_langchain.handler import LightningCallbackHandler, agent_name_of

__all__ = ["LightningCallbackHandler", "agent_name_of", "instrument", "instrumented_handler", "uninstrument"]
