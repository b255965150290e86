"""What the load scripts share: signing, raw HTTP, the server stack, CPU sampling, /metrics, the
open-loop sender and cell planning. Every helper targets 127.0.0.1 only."""
