"""Live trading: daily circuit breakers on a forward stream and the champion-vs-challenger test."""
