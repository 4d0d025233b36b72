"""The built-in models (rnn, lstm, charlstm, gcn-dense, gcn-pyg), each registered through an entry point."""
