"""The terminal clients: `keyhold chat` for members, `keyhold staff|legal|audit` for staff; on the SDK only."""
