"""Pure functions: Envoy / istioctl JSON (snake_case or camelCase) -> the model. No I/O."""
