"""The local stack's tooling: the Kafka broker from Maven Central, processes by pid, the stack and the demo.

Not part of the event contract: `services.shared` never imports this package.
"""
