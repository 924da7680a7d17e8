"""Neural building blocks shared by every backbone and agent."""
