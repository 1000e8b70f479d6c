"""The faces: @cached, the template tag, the page decorator; visitors' state and tenants."""
