//! Container labels (`egress.*`): grammar and classification. (being written)
