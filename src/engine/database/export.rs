//! Reading whole records out for export, page by page.

use super::Database;

impl Database {}
