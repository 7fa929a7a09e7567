"""Networks shared by all methods: backbones, heads, momentum teachers, negative queues."""
