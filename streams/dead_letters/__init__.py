"""Dead letters kept for operators: the store_dead_letters agent."""
