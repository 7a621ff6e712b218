"""State clarion keeps in faust tables, and the pure logic around each table."""
